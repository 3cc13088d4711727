"""What machine this is, for choices and figures that depend on it (the CPU linear kernel, speed, and AP, which
float rounding of one kernel or another moves by tenths)."""


def processor_name() -> str:
    """The processor's model name (Linux ``/proc/cpuinfo``; elsewhere what ``platform`` knows)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    if "model name" in fields:  # a virtual machine's name can be as short as "AMD EPYC": add family and model
        return f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"
    import platform

    return platform.processor() or platform.machine() or "unknown"

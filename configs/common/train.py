"""Training settings read by ``train_net.py`` (``recursivedet.engine.do_train``): the official 3x recipe
(270k iterations at 16 images per batch), full-model gradient clipping at norm 1.0."""

import torch

train = dict(
    output_dir="./output",
    # torchvision's ImageNet ResNet-50 (RGB input), as Sparse R-CNN and RecursiveDet
    init_checkpoint="detectron2://ImageNetPretrained/torchvision/R-50.pkl",
    max_iter=270000,
    # None: optimizer.lr as given. A total batch size B0: optimizer.lr is the lr at B0 images per iteration and is
    # scaled linearly to dataloader.train.total_batch_size (recursivedet/engine/finetune.py).
    reference_batch_size=None,
    # mixed precision: float16 with a gradient scaler on CUDA; bfloat16 on the CPU where it has bfloat16 instructions
    amp=dict(enabled=False),
    # evaluation and export (recursivedet/inference/speed.py): bfloat16 autocast, torch.compile of backbone and decoder
    inference=dict(bf16=False, compile=False),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=100),  # PeriodicCheckpointer
    eval_period=10000,  # 0: evaluate at the end only
    log_period=20,
    clip_grad=dict(enabled=True, max_norm=1.0, norm_type=2.0),
    # Fixed by default: it seeds weights, data order, augmentations and per-iteration RNGs, which makes
    # --resume continue exactly; -1 draws a random seed (a resume then changes the data order).
    seed=42,
    device="cuda" if torch.cuda.is_available() else "cpu",
)

"""P1/P2: model stitching (stitch layer, its trainer, the sweep, critical depths) and one-stage fine-tuning."""

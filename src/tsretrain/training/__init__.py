"""nnU-Net v2 planning, preprocessing, fold training and prediction, with tsretrain's trainers."""

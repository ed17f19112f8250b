"""tsretrain's nnU-Net trainers, in a folder of their own so ``nnUNet_extTrainer`` can point at it."""

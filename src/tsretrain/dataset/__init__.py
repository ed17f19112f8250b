"""From converted cases to an nnU-Net dataset: the leak-free split and the raw dataset layout."""

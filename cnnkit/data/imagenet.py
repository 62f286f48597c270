"""ImageNet's per-channel statistics, the normalization of torchvision's pretrained weights;
kept apart from imagefolder.py so datasets that only need the numbers do not import
torchvision's transforms."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per RGB channel, [0, 1] scale
IMAGENET_STD = (0.229, 0.224, 0.225)

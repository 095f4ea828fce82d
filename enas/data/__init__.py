"""Datasets, image decoding, splits and the on-device loader with augmentation."""

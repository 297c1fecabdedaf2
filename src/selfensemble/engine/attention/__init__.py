"""Attention masks (mask_mod closures), the kernel dispatch, and a picture of the mask."""

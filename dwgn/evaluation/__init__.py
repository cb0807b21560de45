"""Evaluation: the PSNR/SSIM protocol, restoration of any size, test-set evaluation (test.py)."""

"""onevision: train and run LLaVA-OneVision-style vision-language models.

One model turns a single image (AnyRes crops), several images, or a video (bilinear-pooled
frames) into an exactly counted run of visual tokens and splices them into a Qwen2 decoder.
"""

__version__ = "0.1.0"

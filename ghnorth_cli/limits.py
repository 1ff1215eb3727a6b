"""Sane upper bounds on sizes read from options and untrusted files, checked before allocating.

Each bound is far above any real use (the largest published models and datasets) and far below
what would exhaust a machine's memory, so a hostile or mistyped value fails with one line instead
of allocating tens or hundreds of gigabytes.
"""

#: Input image side in pixels (ImageNet models use 224-600; 4096 is 16x the usual area squared).
MAX_IMG_SIZE = 4096
#: Classifier outputs (ImageNet-21k has 21,843 classes).
MAX_NUM_CLASSES = 100_000
#: Zero padding of the random-crop augmentation, in pixels.
MAX_CROP_PADDING = 1024
#: Bytes of a safetensors JSON header (safetensors itself refuses more than 100 MB).
MAX_HEADER_BYTES = 100_000_000
#: Bytes read from stdin or a non-regular file (a pipe, /dev/zero) before giving up.
MAX_STREAM_BYTES = 16 * 2**30
#: GHN hidden size (the released GHNs use 32-64; GHN-3-XL uses 512).
MAX_GHN_HID = 4096
#: GHN max_shape entries (channels, kernel side).
MAX_GHN_SHAPE = (16384, 16384, 64, 64)
#: GHN-3 transformer layers and heads.
MAX_GHN_LAYERS = 256
#: Image pixels PIL may decode (PIL's own default warns at ~89 M and fails at twice that).
MAX_IMAGE_PIXELS = 100_000_000
#: Bytes of a text input (embeddings or graph JSON, metric CSV, arch list, grid file).
MAX_TEXT_BYTES = 256 * 2**20

"""Input and output geometry of the bundled shapes networks, shared by the data builder and the nets.

Kept free of torch so the data side (numpy + OpenCV) can import it.
"""

from __future__ import annotations

DET_SIZE = 384  # detector/segmenter input, square letterbox: shapes under 6 % of the short side need the pixels
STRIDES = (8, 16, 32)  # anchor levels
PROTO_STRIDE = 2  # mask prototypes at 192x192: tiny shapes need more than a few mask cells
PROTO_SIZE = DET_SIZE // PROTO_STRIDE
CLS_SIZE = 128  # classifier input, stretched

"""The user's folder: image/mask pairs, label decoding, transforms, caching, sample order; check, init, download."""

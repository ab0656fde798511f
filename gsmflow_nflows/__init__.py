"""GSMFlow for generalized zero-shot learning, built on nflows.

The public API: the semantic-conditioned coupling transform, the relative
positioning encoder, the one-call model factory and feature generation.

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

__version__ = "0.1.0"

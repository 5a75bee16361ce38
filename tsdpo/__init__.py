"""Tangent-space DPO: steer a language model between preference objectives at inference time.

TS-DPO runs Direct Preference Optimization on the linearized model
f(x; θ0) + J·Δ and learns one tangent vector Δ_k per objective. At inference
the vectors are combined with user weights, θ0 + Σ α_k Δ_k, without further
training.
"""

__version__ = "0.1.0"

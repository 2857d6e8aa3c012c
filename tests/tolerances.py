"""Agreement bounds in one place: every test takes its tolerance from here (measured, then pinned)."""

# Reference (NumPy) vs transformers, float32, full-sequence and token-by-token logits.
NMSE_REFERENCE_VS_HF_F32 = 1e-6

"""Agreement bounds in one place: every test takes its tolerance from here (measured, pinned)."""

# Reference (NumPy) vs transformers, float32, full-sequence and token-by-token logits.
NMSE_REFERENCE_VS_HF_F32 = 1e-6

# NumPy reference (owner: reference helper); measured maxima in the comments.
# Reference vs transformers above: measured <= 1.1e-12 (prefill), <= 6.3e-13 (decode) on the tiny
# configs; 2.5e-9 against transformers' decode when its dt clamp binds on token 0 (test_reference).
NMSE_REFERENCE_CHUNKED_VS_RECURRENT_F64 = 1e-28  # 3.8e-32 (ssm scan, chunk 1..64, T 1..50)
NMSE_REFERENCE_KERNEL_F64 = 1e-28  # conv sequence vs steps, attention over a cache: ~1e-32
NMSE_REFERENCE_SPLIT_VS_WHOLE_F32 = 1e-10  # prefill+decode or 2 prefills vs 1: 1.5e-12
NMSE_REFERENCE_F32_VS_F64 = 1e-10  # whole model: 1.0e-12
NMSE_REFERENCE_LAYOUT_F64 = 1e-28  # q/k rows permuted per head vs not: 2.6e-31
# Lower bound: transformers' prefill with time_step_min=0.05 (clamp binding) differs from the
# unclamped reference by 3.3e-4; at least this much shows the clamp is what differs.
NMSE_HF_CLAMPED_PREFILL_VS_REFERENCE_MIN = 1e-5
# Reference on each converter output type vs transformers (f32), "mix" widened to rows of 256 so
# K-quants apply (test_reference WIDE); random tiny nets amplify weight error ~20x. Measured:
# f32 1.6e-12, f16 7.0e-7, bf16 4.7e-5, q8_0 4.8e-4, q6_k 4.8e-3, q5_k 2.0e-2, q5_k_m 1.9e-2,
# q5_0 3.4e-2, q4_k 7.5e-2, q4_k_m 6.9e-2, q4_0 1.2e-1. Bounds: about 2x measured.
NMSE_REFERENCE_VS_HF_BY_TYPE = {
    "f32": 1e-10, "f16": 2e-6, "bf16": 1e-4, "q8_0": 1e-3, "q6_k": 1e-2, "q5_k": 4e-2,
    "q5_k_m": 4e-2, "q5_0": 7e-2, "q4_k": 0.15, "q4_k_m": 0.14, "q4_0": 0.25,
}

# Converter (owner: converter helper). Peak RSS growth while converting a 365 MB f32 checkpoint,
# as a fraction of its size: streaming holds one 32 MiB chunk of rows plus quantizer temporaries.
# Measured growth: 29 MB (q8_0), 36 MB (f32), 26 MB (q4_k_m); 25 MiB for a 1.08 GB checkpoint.
MAX_CONVERT_RSS_GROWTH_FRACTION = 0.2

# Quantizers (owner: quantizer helper). Q8_0/Q4_0/Q5_0/F16/BF16 are bit-exact with gguf.quants
# (no tolerance). K-quants: weight RMSE ours / llama.cpp's quantize (llama-cpp-python 0.3.36, no
# imatrix), worst tensor of a small nemotron_h with t(5) weights; the limit is 1.05.
# Measured worst: Q4_K 0.978, Q5_K 0.954, Q6_K 0.963.
KQUANT_RMSE_RATIO_VS_LLAMA_CPP = {"Q4_K": 0.99, "Q5_K": 0.97, "Q6_K": 0.975}
# Relative RMSE on 64x512 N(0,1) weights (seed 0); measured 0.07015, 0.03480, 0.01708.
KQUANT_REL_RMSE_GAUSSIAN = {"Q4_K": 0.0705, "Q5_K": 0.0350, "Q6_K": 0.0172}

# Chat sessions (lead). Snapshot-and-continue vs a fresh prefill of the rendered history, NumPy
# reference f32: the same tokens fed in different splits; measured ~1e-12.
NMSE_SESSION_VS_FRESH = 1e-10

# llama.cpp logits on our GGUFs (owner: converter helper), tests/test_llamacpp.py: 37 tokens on
# the tiny configs (mix, attn_first, groups4, kwide). Measured maxima in the comments, pinned with
# ~3x headroom. Random tiny models amplify weight error, hence the large low-bit figures; the
# second table (transformers run on the GGUF's dequantized weights) isolates llama.cpp's own
# arithmetic (activations quantized to Q8_0 / Q8_K inside its matmuls) and is the sharp check.
NMSE_LLAMACPP_VS_HF = {
    "f32": 1e-6,  # 3.6e-7
    "f16": 6e-6,  # 2.3e-6
    "bf16": 4e-4,  # 1.4e-4
    "q8_0": 5e-3,  # 1.6e-3
    "q4_0": 0.6,  # 0.21
    "q5_0": 0.15,  # 0.050
    "q4_k": 0.3,  # 0.11
    "q5_k": 0.1,  # 0.035
    "q6_k": 3e-2,  # 9.9e-3
    "q4_k_m": 0.3,  # 0.099
    "q5_k_m": 0.1,  # 0.033
}
NMSE_LLAMACPP_VS_HF_DEQUANTIZED = {
    "f32": 1e-6,  # 3.6e-7 (nothing to dequantize)
    "f16": 4e-6,  # 1.3e-6
    "bf16": 1.5e-4,  # 5.3e-5
    "q8_0": 2.5e-3,  # 8.2e-4
    "q4_0": 2.5e-3,  # 9.2e-4
    "q5_0": 2.5e-3,  # 8.9e-4
    "q4_k": 6e-3,  # 2.2e-3 (kwide; Q8_K activations), 7.5e-4 where rows fall back to Q5_0
    "q5_k": 6e-3,  # 2.3e-3
    "q6_k": 6e-3,  # 2.4e-3
    "q4_k_m": 6e-3,  # 2.3e-3
    "q5_k_m": 6e-3,  # 2.4e-3
}

# Native CPU kernels (owner: engine helper), tests/test_kernels.py; measured maxima in comments.
# f32 kernels vs the float64 oracle: at most this factor times the NumPy float32 reference's own
# error (the flash-attention rule), plus a floor for ops float32 NumPy computes exactly. The matmul
# reference sums term by term (NumPy's float32 matmul changes order with its BLAS: numpy 2.4 put
# its error below our kernels' by 10x on some shapes); measured ratio against it: 1.28 at most.
KERNEL_F32_ORACLE_FACTOR = 4.0
KERNEL_F32_ORACLE_FLOOR = 1e-13
# Matmul with activations quantized to int8 blocks on the fly (the decode path) vs float64, N(0,1)
# activations. Measured: Q8_0 4.2e-5, Q4_0 3.2e-5, Q5_0 3.5e-5 (32-value activation blocks);
# Q4_K 8.3e-5, Q5_K 1.5e-4, Q6_K 6.9e-5 (256-value blocks, as llama.cpp's Q8_K); Q4_1 1.3e-4 and
# Q5_1 3.8e-5 (worst of six seeds; the minimum m gives the rows a mean, so less cancellation).
KERNEL_MATMUL_INT8_NMSE = {"Q8_0": 1e-4, "Q4_0": 1e-4, "Q5_0": 1e-4, "Q4_1": 3e-4, "Q5_1": 1e-4,
                           "Q4_K": 2e-4, "Q5_K": 3e-4, "Q6_K": 2e-4}
# The same integer dot products in another float summation order: measured 4.1e-14.
KERNEL_SCALAR_VS_AVX2_NMSE = 1e-12
# Chunked SSD scan vs the recurrence, float32: measured 2.6e-14.
KERNEL_SCAN_CHUNKED_VS_RECURRENT_NMSE = 1e-12
# Attention over a q8_0 KV cache vs exact float64 K and V: measured 7.1e-5.
KERNEL_ATTENTION_Q8_CACHE_NMSE = 2e-4

# Native engine end to end (owner: engine helper), tests/test_engine.py; measured maxima in
# comments. The reference is float64 on the same GGUF. Prefill batches of at least gemm_min_batch
# tokens keep activations in f32 (every weight type but Q4_0/Q5_0/Q4_K/Q5_K on AVX2, and Q8_0 on
# AVX2 below 96 tokens, whose int8 panels quantize them as decode does), so with an f32 KV cache
# it matches to rounding: measured 1.2e-12. Shorter batches of quantized weights quantize them as
# decode does.
ENGINE_PREFILL_VS_REFERENCE_NMSE = 1e-11
# Decode quantizes activations to int8 blocks for quantized weights, as llama.cpp does everywhere
# (its figures on the same files: q8_0 5.0e-4, q4_0 4.5e-4, q4_k 1.3e-3, q6_k 1.4e-3).
ENGINE_DECODE_VS_REFERENCE_NMSE = {
    "f32": 1e-11, "f16": 1e-11, "bf16": 1e-11,  # 2.1e-13
    "q8_0": 1e-3, "q4_0": 1e-3, "q5_0": 1e-3,  # 4.4e-4, 4.2e-4, 4.3e-4
    "q4_k": 3e-3, "q5_k": 3e-3, "q6_k": 3e-3, "q4_k_m": 3e-3,  # 1.2e-3, 1.3e-3, 1.4e-3, 1.2e-3
    "q5_k_m": 3e-3,  # tiny "mix": Q5_1 and Q8_0 fallbacks; measured 7.4e-4 (q4_k there 7.2e-4)
}
# KV cache stored f16 / q8_0 instead of f32 (f32 weights): measured 1.7e-7 / 1.3e-4 (attn_first).
ENGINE_KV_CACHE_VS_REFERENCE_NMSE = {"f16": 5e-7, "q8_0": 4e-4}
# Prefill then decode, or n_batch chunks, vs all at once (f32 weights and KV): measured 8.1e-13.
ENGINE_SPLIT_VS_WHOLE_NMSE = 1e-11
# Forced scalar kernels vs AVX2, whole model, f32 activations: measured 3.3e-11.
ENGINE_SCALAR_VS_AVX2_NMSE = 1e-10
# ...and with int8 activations (45-token prefill, decode), where a rounding flip of one activation
# code is amplified by the random model: measured up to 3.8e-4 (q4_k, decode after a 30-token
# prefill; 2.0e-4 for its 45-token prefill), the int8 noise level (q4_k vs reference: 1.4e-3).
ENGINE_SCALAR_VS_AVX2_INT8_NMSE = 1e-3
# Ours vs llama.cpp on the same file (both f16 KV); the difference is llama.cpp's activation
# quantization (and its f16/bf16 activations for f16/bf16 weights). Measured ("kwide"; "mix" for
# the fallbacks): f32 5.1e-9, f16 5.1e-7, bf16 3.1e-5, q8_0 4.9e-4, q4_0 4.5e-4, q5_0 5.1e-4,
# q4_k 1.4e-3, q5_k 1.4e-3, q6_k 1.4e-3, q4_k_m 1.4e-3, q5_k_m 1.4e-3 (mix 8.0e-4).
ENGINE_VS_LLAMACPP_NMSE = {"f32": 2e-8, "f16": 2e-6, "bf16": 1e-4, "q8_0": 1.5e-3,
                           "q4_0": 1.5e-3, "q5_0": 1.5e-3, "q4_k": 4e-3, "q5_k": 4e-3,
                           "q6_k": 4e-3, "q4_k_m": 4e-3, "q5_k_m": 4e-3}
# Our error to the reference over llama.cpp's, same file and prompt: at most 1.0 while our prefill
# kept f32 activations; with int8 activations in both (45 tokens) measured up to 1.016 (Q8_0).
ENGINE_VS_LLAMACPP_REF_RATIO = 1.05

# The shipped tiny reasoner through transformers, greedy, first 10 held-out problems per kind:
# measured 28/30 correct with reasoning on, 5/30 off (on 50 per kind: 96.0% and 20.0%).
REASONER_THINK_ON_ACCURACY_FLOOR = 0.85
REASONER_THINKING_GAIN_FLOOR = 0.6

# Mixture of experts (owner: MoE helper), tests/test_moe_convert.py: llama.cpp on our
# nemotron_h_moe files vs transformers, 37 tokens; f32 on the three tiny MoE configs, the other
# types on moe_kwide. Measured maxima in the comments.
NMSE_MOE_LLAMACPP_VS_HF = {
    "f32": 1e-6,  # 4.5e-9 (moe), 4.2e-9 (moe_latent), 2.5e-7 (moe_attn_first)
    "f16": 6e-6,  # 1.8e-6
    "bf16": 4e-4,  # 1.2e-4
    "q8_0": 2.5e-2,  # 2.8e-3 (moe_kwide); slow matrix: 8.3e-3 (moe), 1.1e-3, 1.1e-3
    "q4_0": 1.0,  # 0.45
    "q5_0": 0.4,  # 0.13
    "q4_k": 0.8,  # 0.27
    "q5_k": 0.35,  # 0.12
    "q6_k": 0.15,  # 4.5e-2
    "q4_k_m": 0.9,  # 0.30; slow matrix: 0.14, 5.6e-2, 4.0e-2
    "q5_k_m": 0.4,  # 0.13
}
# The same files against transformers run on their dequantized weights: llama.cpp's own
# arithmetic (Q8_0 / Q8_K activations), amplified where it flips a top-k choice of the 12 layers.
NMSE_MOE_LLAMACPP_VS_HF_DEQUANTIZED = {
    "f32": 1e-6,  # as above (nothing to dequantize)
    "f16": 3e-6,  # 7.5e-7; slow matrix: 6.4e-7, 6.3e-7, 9.3e-7
    "bf16": 1.5e-4,  # 5.1e-5
    "q8_0": 2.5e-2,  # 7.6e-4; slow matrix: 7.9e-3 (moe), 5.6e-4, 4.3e-4
    "q4_0": 8e-3,  # 2.6e-3
    "q5_0": 7e-2,  # 2.2e-2
    "q4_k": 0.3,  # 0.10
    "q5_k": 8e-2,  # 2.7e-2
    "q6_k": 3e-2,  # 1.1e-2
    "q4_k_m": 0.3,  # 0.11; slow matrix: 4.3e-2, 4.1e-3, 1.6e-2
    "q5_k_m": 8e-2,  # 2.6e-2
}
# NumPy reference vs llama.cpp on the same f32 MoE file (test_moe_reference).
NMSE_MOE_REFERENCE_VS_LLAMACPP = 1e-6  # 5.7e-9, 4.6e-9, 3.6e-7 (moe, moe_latent, moe_attn_first)
# Reference vs transformers on them (NMSE_REFERENCE_VS_HF_F32): 4.3e-13, 5.1e-13, 6.4e-13.
# Native engine vs llama.cpp on the same MoE file (test_moe_engine, "moe_kwide", both f16 KV).
# Measured: f32 2.8e-9, f16 7.5e-7, q8_0 5.0e-4, q4_0 6.4e-3, q4_k 8.1e-3, q6_k 7.2e-3,
# q4_k_m 5.3e-4. Each engine's distance to the float64 reference is about the same (q8_0: ours
# 3.2e-3, llama.cpp 3.3e-3; q4_k 8.1e-2 / 8.8e-2): int8 activations shift the routers' top-k
# choices in both, which a random 12-layer net amplifies.
NMSE_MOE_ENGINE_VS_LLAMACPP = {"f32": 2e-8, "f16": 3e-6, "q8_0": 2e-3, "q4_0": 2e-2,
                               "q4_k": 2.5e-2, "q6_k": 2.5e-2, "q4_k_m": 2.5e-2}
# The reference on llama.cpp's own converter's f32 file vs on ours, same checkpoint: 2.0e-15
# (moe), 1.5e-16 (moe_attn_first); their converter computes A = -exp(A_log) in torch.
NMSE_MOE_LLAMACPP_FILE_VS_OURS = 1e-12
# Batched decode (owner: server helper, test_batch): Model.eval_batch against each sequence decoded
# alone, 3 greedy steps, "kwide" tiny net. f32/f16 below 4 rows: bit-identical (same dot kernel).
# Measured, B = 2..32: f32 <= 4.8e-11, f16 <= 1.3e-11 (f32 panels from 4 rows); q8_0 <= 4.3e-5,
# q4_0 <= 9.3e-6, q4_k_m <= 9.9e-5, q6_k <= 5.0e-5 (multi-token int8 dots / int8 panels: a sum
# in another order moves an int8 activation code by one step; random tiny nets amplify it).
BATCH_DECODE_VS_SOLO_NMSE = {"float": 1e-9, "quantized": 5e-4}

# CUDA kernels run through the SIMT emulator (owner: CUDA helper), tests/test_cuda_emu.py, against
# their CPU twins (_C.kernels) on the same inputs; measured maxima in the comments.
# Decode matmul: the same int8 activation codes and integer dots, float terms summed in another
# order: measured 3.3e-14 (Q5_0; the test shapes); a flipped activation code would show as ~1e-6.
CUDA_EMU_MATVEC_NMSE = 1e-12
# Prefill matmul: TF32 tensor-core tiles (10-bit mantissas) vs the CPU's f32 panels: measured
# 1.3e-7 (Q4_1), 8e-8 typical (1.7e-7 seen on other seeds).
CUDA_EMU_GEMM_TF32_NMSE = 5e-7
# f32 kernels (norms, conv, scan, attention over the same cache rows): the same formulas with
# other reduction orders. Measured: rmsnorm 1.0e-14, gated 4.6e-15, conv 6.0e-15, scan 1.4e-14,
# attention 4.7e-13 (split-K, 601 keys over 3 splits; tiled prefill 3.3e-13).
CUDA_EMU_F32_NMSE = 1e-11
# Chunked SSD scan vs the CPU's chunk path: measured 4.9e-14 (T 130, chunk 64, N 130); vs the
# device recurrence 6.6e-14.
CUDA_EMU_SSD_NMSE = 1e-11
# Whole tiny model ("kwide") through the emulated CUDA backend (Model(backend="cuda_emu")), prefill
# of 30 tokens then 6 decode steps, vs the float64 reference on the same GGUF. Prefill of
# quantized weights uses TF32 tiles with f32 activations, so it sits well inside the CPU engine's
# int8-activation prefill: measured 5.7e-5 (q4_k_m), 2.8e-5 (q8_0); F32 weights take f32 dots at
# any T (the MoE router's top-k must not flip on TF32 rounding): against the cpu backend
# measured 1.2e-11 (kwide, 70-token prefill + 10 steps), 9.1e-13 (moe); with TF32 it was 9.0e-7.
# Decode quantizes activations to int8 as the CPU does and is held to
# ENGINE_DECODE_VS_REFERENCE_NMSE (measured q8_0 6.2e-4, q4_k_m 1.9e-3), and for f32 weights to
# the f32 figure (measured 1.5e-7; q8_0 KV 9.0e-7).
CUDA_EMU_MODEL_F32_NMSE = 5e-6
CUDA_EMU_MODEL_PREFILL_NMSE = 2e-4

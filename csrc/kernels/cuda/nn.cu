// nvcc build of kernels/cuda/nn.cuh (the emulator build includes it from emu.cpp).
#include "kernels/cuda/nn.cuh"

"""fastnn: fast neural-network kernels (public API lands in the next commit)."""

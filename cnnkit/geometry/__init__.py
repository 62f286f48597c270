"""The course's convolution arithmetic: output sizes, convolution and correlation by hand,
Toeplitz matrices, receptive fields and sliding windows. It depends on nothing else in cnnkit,
so the builder can explain a shape error in the course's terms."""

"""The paper's network: dynamic-weights convolutions, HDMC, HDFN and the encoder-decoder."""

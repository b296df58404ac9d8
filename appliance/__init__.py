"""Market-data capture appliance: NASDAQ TotalView-ITCH 5.0 over MoldUDP64, decoded in place by numba kernels."""
__version__ = "0.1.0"

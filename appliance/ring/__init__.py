"""Receive rings: AF_XDP and TPACKET_V3, and the XDP program that steers the feed into them."""

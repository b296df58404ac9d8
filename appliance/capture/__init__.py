"""Live capture: the receive loop, recording, the lab namespace and the sender."""

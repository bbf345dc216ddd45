"""Sessions: the store protocol, its memory and Redis backends, the SignalWire-style manager and tool tokens."""

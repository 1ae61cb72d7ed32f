"""jrnn internals; the public names are re-exported by jrnn, jrnn.train and jrnn.interop."""

"""The program's state as records: pickling, shared references, out-of-band buffers."""

"""Load generators: separate processes (multiprocessing, spawn), each with its own event loop."""

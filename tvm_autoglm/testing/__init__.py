"""Tools for testing the compiler itself (fuzzing); not needed at run time."""

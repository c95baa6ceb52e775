"""Operations: thread naming and inspection shared by the server, tests and tools."""

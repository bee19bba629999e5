model = 42

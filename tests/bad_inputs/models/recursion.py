def f():
    return f()
model = f()

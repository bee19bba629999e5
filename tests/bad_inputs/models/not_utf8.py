# café
model = 1

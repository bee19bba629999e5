import symgrad as sg
m = sg.Model('shapes', 'x', task='regression')
B, a, b = m.dims('B a b')
X = m.input('X', (B, a))
W = m.param('W', (b, a))
m.output('y', X @ W)

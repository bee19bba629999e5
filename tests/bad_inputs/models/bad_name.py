import symgrad as sg
m = sg.Model('not a name', 'x', task='binary')

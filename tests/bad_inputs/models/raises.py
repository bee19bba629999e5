import symgrad as sg
raise ValueError('the model file failed')

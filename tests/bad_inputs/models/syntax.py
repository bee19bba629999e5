model = (

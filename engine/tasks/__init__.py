"""One class per task over the runtime, their parameters, and the registry that names them."""

"""`engine serve`: the hosted APIs' wire shapes (pure functions), served models, workers and routes."""

"""tunerl's algorithms: one module each (config class, loss function, training_step)."""

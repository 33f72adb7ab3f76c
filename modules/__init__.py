"""rnnbench models: sequence encoders, task heads, and the LightningModule that trains them."""

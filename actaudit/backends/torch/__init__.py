"""PyTorch backend (TorchScript, torch.export, pickled modules, state_dict + --arch)."""

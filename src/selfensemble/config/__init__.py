"""Every configuration dataclass and the measured defaults."""

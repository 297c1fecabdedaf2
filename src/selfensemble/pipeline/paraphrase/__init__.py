"""Model-written paraphrases, the gate that screens them, and one-question paraphrasing."""

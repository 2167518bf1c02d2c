"""The model-family builders live beside these tests."""



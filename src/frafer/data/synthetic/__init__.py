"""The built-in synthetic faces: a renderer of identities and expressions for the demo and the tests."""

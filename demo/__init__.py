"""Notebook demos: animation and composition."""

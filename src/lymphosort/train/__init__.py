"""lymphosort.train"""

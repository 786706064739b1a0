"""lymphosort.models"""

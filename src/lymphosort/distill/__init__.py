"""lymphosort.distill"""

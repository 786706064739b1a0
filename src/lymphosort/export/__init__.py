"""lymphosort.export"""

"""lymphosort.realtime"""

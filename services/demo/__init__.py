"""``midcall demo``: the whole fabric, a salon booking API and a scripted conversation."""

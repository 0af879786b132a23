"""The routing side: the filter grammar and its evaluation, subscriptions, the
bus that routes each change to the matching clients, their bounded outboxes,
and the change events' wire encodings."""

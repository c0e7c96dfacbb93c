/* The services a listener can offer; each is a struct conn_service. */
#ifndef PARLEY_SERVICE_H
#define PARLEY_SERVICE_H

#include "conf.h"

struct conn_service;

extern const struct conn_service echo_service;
extern const struct conn_service chat_service;

const struct conn_service *service_ops(enum service_kind kind);

#endif

//! The `#[handler]` attribute of `wasmloop-sdk`. It owns only the code generation: it
//! checks the signature, keeps the user's function as written, and exports it as the
//! component's wasi:http handler through glue in `wasmloop_sdk::__private`. Everything
//! a handler does at run time lives in `wasmloop-sdk`; use the attribute from there.

use proc_macro::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType, parse_macro_input};

/// Exports a function as the component's HTTP handler. See `wasmloop_sdk::handler`.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    if !args.is_empty() {
        let args = proc_macro2::TokenStream::from(args);
        let error =
            syn::Error::new(args.span(), "`#[handler]` takes no arguments").to_compile_error();
        let item = proc_macro2::TokenStream::from(item);
        return quote!(#error #item).into();
    }
    let function = parse_macro_input!(item as ItemFn);
    match expand(&function) {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            // Keep the function so that errors inside its body are reported too.
            let error = error.to_compile_error();
            quote!(#error #function).into()
        }
    }
}

fn expand(function: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let signature = &function.sig;
    if let Some(constness) = &signature.constness {
        return Err(syn::Error::new(
            constness.span(),
            "a handler cannot be a `const fn`",
        ));
    }
    if let Some(unsafety) = &signature.unsafety {
        return Err(syn::Error::new(
            unsafety.span(),
            "a handler cannot be an `unsafe fn`",
        ));
    }
    if let Some(abi) = &signature.abi {
        return Err(syn::Error::new(
            abi.span(),
            "a handler cannot declare an ABI",
        ));
    }
    if !signature.generics.params.is_empty() || signature.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            signature.generics.span(),
            "a handler cannot be generic: it takes a `Request` and returns a response",
        ));
    }
    if let Some(variadic) = &signature.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            "a handler cannot be variadic",
        ));
    }
    let argument = match signature.inputs.len() {
        1 => &signature.inputs[0],
        0 => {
            return Err(syn::Error::new(
                signature.paren_token.span.join(),
                "a handler takes one argument, the request: `fn handle(req: Request)`",
            ));
        }
        _ => {
            return Err(syn::Error::new(
                signature.inputs[1].span(),
                "a handler takes one argument, the request: `fn handle(req: Request)`",
            ));
        }
    };
    let argument_type = match argument {
        FnArg::Typed(pattern) => &pattern.ty,
        FnArg::Receiver(receiver) => {
            return Err(syn::Error::new(
                receiver.span(),
                "a handler is a free function, not a method",
            ));
        }
    };

    let name = &signature.ident;
    // Errors about the argument and the return type point at the user's signature.
    let output_span = match &signature.output {
        ReturnType::Default => signature.ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let request = quote_spanned!(argument_type.span()=> {
        let request: #argument_type = request;
        request
    });
    let into_response = |call: proc_macro2::TokenStream| {
        quote_spanned!(output_span=> {
            let response = #call;
            ::wasmloop_sdk::__private::into_response(response)
        })
    };

    let glue = if signature.asyncness.is_some() {
        let call = into_response(quote!(#name(#request).await));
        quote! {
            struct __WasmloopHandler;
            impl ::wasmloop_sdk::__private::wasip3::exports::http::handler::Guest for __WasmloopHandler {
                async fn handle(
                    request: ::wasmloop_sdk::__private::wasip3::http::types::Request,
                ) -> ::core::result::Result<
                    ::wasmloop_sdk::__private::wasip3::http::types::Response,
                    ::wasmloop_sdk::__private::wasip3::http::types::ErrorCode,
                > {
                    ::wasmloop_sdk::__private::serve_async(request, async |request| #call).await
                }
            }
            ::wasmloop_sdk::__private::wasip3::http::service::export!(
                __WasmloopHandler with_types_in ::wasmloop_sdk::__private::wasip3
            );
        }
    } else {
        let call = into_response(quote!(#name(#request)));
        quote! {
            struct __WasmloopHandler;
            impl ::wasmloop_sdk::__private::wasip2::exports::http::incoming_handler::Guest for __WasmloopHandler {
                fn handle(
                    request: ::wasmloop_sdk::__private::wasip2::http::types::IncomingRequest,
                    out: ::wasmloop_sdk::__private::wasip2::http::types::ResponseOutparam,
                ) {
                    ::wasmloop_sdk::__private::serve_sync(request, out, |request| #call)
                }
            }
            ::wasmloop_sdk::__private::wasip2::http::proxy::export!(
                __WasmloopHandler with_types_in ::wasmloop_sdk::__private::wasip2
            );
        }
    };
    Ok(quote! {
        #function
        const _: () = { #glue };
    })
}
